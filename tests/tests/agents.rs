//! Server agents as the control plane sees them: a registered host gets a broker user of its
//! own that may read only its own queue and publish only replies, dead letters and its own
//! heartbeats; agents beat, and the servers API shows them connected or unreachable.

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};
use std::time::Duration;
use tests::{id, Stack, StackOptions};

/// The servers API's view of one server once `ready` holds for it (within 30 s).
async fn connect(url: &str) -> Result<Connection, lapin::Error> {
    Connection::connect(url, ConnectionProperties::default()).await
}

fn refused(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(a) if a.get_id() == 403)
}

/// Publishes with confirms on a fresh channel; Ok only when the broker took the message.
async fn publish(
    conn: &Connection,
    exchange: &str,
    key: &str,
    props: BasicProperties,
) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        br#"{"task": 1, "type": "delete"}"#,
        props,
    )
    .await?
    .await?;
    // A refusal closes the channel after the publish returned; a round trip finds it.
    ch.queue_declare(
        "".into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|_| ())
    .or_else(|e| if refused(&e) { Err(e) } else { Ok(()) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_agent_may_touch_only_its_own_queue_and_is_seen_while_it_beats() {
    let options = StackOptions {
        env: vec![
            (
                "gateway",
                "HOSTING_BROKER_ADMIN_URL".into(),
                tests::BROKER_ADMIN_URL.into(),
            ),
            ("*", "HOSTING_HEARTBEAT_SECS".into(), "1".into()),
        ],
        ..Default::default()
    };
    let mut stack = Stack::spawn_with(options).await;
    let p = stack.prefix.clone();

    // The one-host install's agents share the services' user, and beat.
    let (_, servers) = stack.call("GET", "/servers", None).await;
    for s in servers.as_array().cloned().unwrap_or_default() {
        let seen = stack
            .wait_server(id(&s), |v| v["agent"]["state"] == "connected")
            .await;
        let software = &seen["agent"]["software"];
        match seen["kind"].as_str() {
            Some("web") => {
                assert!(
                    software["nginx"]
                        .as_str()
                        .is_some_and(|v| v.contains("nginx/")),
                    "{seen}"
                );
                assert!(
                    software["php"]
                        .as_str()
                        .is_some_and(|v| v.starts_with("PHP ")),
                    "{seen}"
                );
            }
            _ => assert!(
                software["mariadb"]
                    .as_str()
                    .is_some_and(|v| v.contains("MariaDB")),
                "{seen}"
            ),
        }
    }

    // A server's verify asks its agent what it runs.
    for s in servers.as_array().cloned().unwrap_or_default() {
        let log = stack.verify_server(id(&s)).await;
        let expected = if s["kind"] == "web" {
            "php_pools: 8"
        } else {
            "mariadb: "
        };
        assert!(log.contains(expected), "{log}");
    }
    let (status, r) = stack
        .call(
            "POST",
            &format!("/servers/{}/tasks", id(&servers[0])),
            Some(json!({"type": "upgrade"})),
        )
        .await;
    assert_eq!(status, 422, "{r}");

    // Registering a db server answers its agent's credentials, once.
    let (status, db2) = stack
        .call(
            "POST",
            "/servers",
            Some(json!({"name": "db2", "kind": "db", "host": "127.0.0.1", "port": 3306})),
        )
        .await;
    assert_eq!(status, 201, "{db2}");
    assert_eq!(db2["agent"]["state"], "never-seen", "{db2}");
    let creds = db2["agent_credentials"].clone();
    let user = format!("{p}.agent.db.db2");
    assert_eq!(creds["broker_user"], user.as_str(), "{db2}");
    let agent_url = creds["env"]["HOSTING_AMQP_URL"]
        .as_str()
        .expect("the agent's broker URL")
        .to_owned();
    assert_eq!(creds["env"]["HOSTING_SERVER"], "db2");
    let (_, again) = stack
        .call("GET", &format!("/servers/{}", id(&db2)), None)
        .await;
    assert!(again.get("agent_credentials").is_none(), "{again}");
    assert!(!again
        .to_string()
        .contains(creds["broker_password"].as_str().unwrap_or("-")));

    // What that user may not do: read another host's queue, publish a task or a heartbeat of
    // another host, speak as another user, make a queue of its own to listen on.
    let agent = connect(&agent_url)
        .await
        .expect("the agent's user connects");
    let ch = agent.create_channel().await.expect("a channel");
    let other = ch
        .basic_consume(
            format!("{p}.rpc.dbprov.local").as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert!(other.as_ref().is_err_and(refused), "{:?}", other.err());
    let task = publish(
        &agent,
        &format!("{p}.tasks"),
        "installer",
        BasicProperties::default().with_type("task.v1".into()),
    )
    .await;
    assert!(
        task.as_ref().is_err_and(refused),
        "a task was published: {task:?}"
    );
    let via_default = publish(
        &agent,
        "",
        &format!("{p}.tasks.installer"),
        BasicProperties::default(),
    )
    .await;
    assert!(
        via_default.as_ref().is_err_and(refused),
        "a task went through the default exchange: {via_default:?}"
    );
    let forged = publish(
        &agent,
        &format!("{p}.events"),
        "agent.db.local",
        BasicProperties::default().with_user_id(user.as_str().into()),
    )
    .await;
    assert!(
        forged.as_ref().is_err_and(refused),
        "another host's heartbeat: {forged:?}"
    );
    // Nor bind its own queue to another host's routing key, to be sent that host's requests.
    let ch = agent.create_channel().await.expect("a channel");
    let bound = ch
        .queue_bind(
            format!("{p}.rpc.dbprov.db2").as_str().into(),
            format!("{p}.rpc").as_str().into(),
            "dbprov.local".into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert!(bound.as_ref().is_err_and(refused), "{:?}", bound.err());
    // Nor publish a dead letter (which could fail a task, or be replayed by an operator).
    let letter = publish(
        &agent,
        &format!("{p}.dead-letter"),
        "",
        BasicProperties::default().with_type("task.v1".into()),
    )
    .await;
    assert!(
        letter.as_ref().is_err_and(refused),
        "a dead letter: {letter:?}"
    );
    let ch = agent.create_channel().await.expect("a channel");
    let snoop = ch
        .queue_declare(
            format!("{p}.snoop").as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert!(snoop.as_ref().is_err_and(refused), "{:?}", snoop.err());
    let _ = agent.close(200, "done".into()).await;

    // A real dbprov under that user: it declares its queue, beats, and answers through the
    // replies exchange; a site's database is made there.
    let key = stack.dir.join("dbprov-db2.key");
    stack
        .start_as(
            "dbprov-db2",
            "dbprov",
            &[
                ("HOSTING_SERVER", "db2"),
                ("HOSTING_AMQP_URL", &agent_url),
                ("HOSTING_DBPROV_KEY_FILE", &key.to_string_lossy()),
                // An agent holds no key to the state database.
                ("HOSTING_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
            ],
        )
        .expect("dbprov for db2");
    let seen = stack
        .wait_server(id(&db2), |v| v["agent"]["state"] == "connected")
        .await;
    assert!(
        seen["agent"]["software"]["mariadb"]
            .as_str()
            .is_some_and(|v| v.contains("MariaDB")),
        "{seen}"
    );
    let client = stack.create_client("acme").await;
    let (site, task) = stack
        .create_site_on("db2.acme.example", "acme", "example", "db2")
        .await;
    let done = stack.wait_task(id(&task), Duration::from_secs(60)).await;
    stack.assert_success(&done).await;

    // A client's token may not touch a server: neither rotate its agent's credentials nor
    // start its tasks; and a server task takes only what it names.
    let (status, t) = stack
        .call(
            "POST",
            "/tokens",
            Some(json!({"name": "acme-app", "client": client["id"]})),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    let token = t["token"].as_str().unwrap_or_default().to_owned();
    for (path, body) in [
        (format!("/servers/{}/credentials", id(&db2)), None),
        (
            format!("/servers/{}/tasks", id(&db2)),
            Some(json!({"type": "verify"})),
        ),
    ] {
        let (status, r) = stack.call_as(&token, "POST", &path, body).await;
        assert_eq!(status, 403, "{path}: {r}");
    }
    for bad in [
        json!({"type": 5}),
        json!({"type": "verify", "server": 1}),
        json!({"type": "x".repeat(100_000)}),
    ] {
        let (status, r) = stack
            .call("POST", &format!("/servers/{}/tasks", id(&db2)), Some(bad))
            .await;
        assert!((400..500).contains(&status), "{status}: {r}");
        assert!(r["error"]["message"].is_string(), "{r}");
    }
    assert!(
        std::fs::read_to_string(stack.dir.join("logs/dbprov-db2.log"))
            .unwrap_or_default()
            .contains("create database and user"),
        "the site's database was not made by db2's agent"
    );

    let on_db2 = stack.site(id(&site)).await;
    let on_local = stack.install_site("local.acme.example", "acme").await;

    // A new password: the old one is refused at once, and the agent connected with it is cut
    // off (it turns unreachable within three beats).
    let (status, fresh) = stack
        .call("POST", &format!("/servers/{}/credentials", id(&db2)), None)
        .await;
    assert_eq!(status, 200, "{fresh}");
    assert!(
        connect(&agent_url).await.is_err(),
        "the old password still works"
    );
    let fresh_url = fresh["env"]["HOSTING_AMQP_URL"].as_str().unwrap_or("");
    let c = connect(fresh_url).await.expect("the new password works");
    let _ = c.close(200, "done".into()).await;
    let gone = stack
        .wait_server(id(&db2), |v| v["agent"]["state"] == "unreachable")
        .await;
    stack.kill("dbprov-db2");
    // Workers measure silence against the freshest beat (not the clock, which would hold
    // every task back while no gateway records beats): wait until the others have beaten on.
    let last = |v: &Value| {
        v["agent"]["last_seen"]
            .as_str()
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .expect("a last_seen time")
    };
    let silent_since = last(&gone);
    let local_db = servers
        .as_array()
        .and_then(|l| l.iter().find(|s| s["kind"] == "db"))
        .map(id)
        .expect("the local db server");
    stack
        .wait_server(local_db, |v| {
            (last(v) - silent_since).as_seconds_f64() > 3.5
        })
        .await;

    // A task for a site on that host waits, queued, saying for what; another host's goes on.
    let (_, r) = stack
        .post_site_task(id(&on_db2), json!({"type": "verify"}))
        .await;
    let waiting = id(&r["task"]);
    let (_, r) = stack
        .post_site_task(id(&on_local), json!({"type": "verify"}))
        .await;
    let elsewhere = stack
        .wait_task(id(&r["task"]), Duration::from_secs(60))
        .await;
    stack.assert_success(&elsewhere).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !stack
        .task_log_text(waiting)
        .await
        .contains("the agent dbprov on db server db2")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no line says what the task waits for: {}",
            stack.task_log_text(waiting).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, t) = stack.call("GET", &format!("/tasks/{waiting}"), None).await;
    assert_eq!(t["status"], "queued", "{t}");
    // Its verify says the agent does not answer.
    let (_, r) = stack
        .call(
            "POST",
            &format!("/servers/{}/tasks", id(&db2)),
            Some(json!({"type": "verify"})),
        )
        .await;
    let down = stack
        .wait_task(id(&r["task"]), Duration::from_secs(60))
        .await;
    assert_eq!(down["status"], "error", "{down}");
    assert!(
        down["error"]
            .as_str()
            .is_some_and(|e| e.contains("dbprov on db server db2 did not answer")),
        "{down}"
    );

    // Back (with its new password), the agent is seen again and the task runs.
    stack
        .start_as(
            "dbprov-db2",
            "dbprov",
            &[
                ("HOSTING_SERVER", "db2"),
                ("HOSTING_AMQP_URL", fresh_url),
                ("HOSTING_DBPROV_KEY_FILE", &key.to_string_lossy()),
            ],
        )
        .expect("dbprov for db2 again");
    stack
        .wait_server(id(&db2), |v| v["agent"]["state"] == "connected")
        .await;
    let done = stack.wait_task(waiting, Duration::from_secs(60)).await;
    stack.assert_success(&done).await;

    stack.teardown().await;
}
