//! A replicated broker: a three-node RabbitMQ cluster of the test's own, the services given
//! all three nodes. Under a paced load of verify tasks the node that leads the installer's
//! task queue (a quorum queue) is killed with SIGKILL: no accepted task is lost or fails, and
//! the services carry on through the other two nodes by themselves.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tests::faults::Rabbit;
use tests::{Stack, StackOptions};

const TASKS: usize = 240;

fn id(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_default()
}

/// The node that leads a quorum queue, from `rabbitmqctl list_queues`.
fn leader(node: &Rabbit, queue: &str) -> Option<String> {
    let out = node
        .ctl(&[
            "list_queues",
            "name",
            "type",
            "leader",
            "--no-table-headers",
        ])
        .ok()?;
    out.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&queue)).then(|| {
            assert_eq!(
                f.get(1),
                Some(&"quorum"),
                "{queue} is not a quorum queue: {l}"
            );
            f.get(2).map(|s| s.to_string())
        })?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_of_the_task_queues_loses_no_task() {
    let root = std::path::PathBuf::from("/tmp/hosting-tests").join(format!(
        "cluster-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&root).expect("the test's directory");
    let mut nodes = Rabbit::cluster(&root, 3)
        .await
        .expect("a three-node RabbitMQ cluster");
    let formed = nodes[0].ctl(&["await_online_nodes", "3", "--timeout", "120"]);
    assert!(formed.is_ok(), "the cluster did not form: {formed:?}");
    let urls: Vec<String> = nodes.iter().map(Rabbit::url).collect();
    let stack = Stack::spawn_with(StackOptions {
        amqp_url: Some(urls.join(",")),
        root: Some(root.clone()),
        env: vec![
            ("*", "HOSTING_LEASE_SECS".into(), "15".into()),
            ("*", "HOSTING_QUEUE_TYPE".into(), "quorum".into()),
        ],
        ..Default::default()
    })
    .await;
    stack.create_client("acme").await;
    let mut sites = Vec::new();
    for n in 0..4 {
        sites.push(id(&stack
            .install_site(&format!("q{n}.acme.example"), "acme")
            .await));
    }
    let queue = format!("{}.tasks.installer", stack.prefix);
    let lead = leader(&nodes[0], &queue).expect("the installer's queue and its leader");
    let victim = nodes
        .iter()
        .position(|n| n.name == lead)
        .expect("the leader is one of our nodes");
    eprintln!("{queue} is led by {lead}; it dies after a third of the tasks");

    let mut accepted = Vec::new();
    let mut killed_at = None;
    let started = Instant::now();
    for n in 0..TASKS {
        if n == TASKS / 3 {
            nodes[victim].kill();
            killed_at = Some(Instant::now());
        }
        // Asked again while the gateway says 503 (nothing was made); it never should here.
        let (status, r) = stack
            .call(
                "POST",
                &format!("/sites/{}/tasks", sites[n % sites.len()]),
                Some(json!({"type": "verify"})),
            )
            .await;
        assert_eq!(status, 202, "{r}");
        accepted.push(id(&r["task"]));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_finished = None;
    for t in &accepted {
        let left = deadline.saturating_duration_since(Instant::now());
        let task = stack.wait_task(*t, left).await;
        assert!(
            ["success", "warning"].contains(&task["status"].as_str().unwrap_or("")),
            "task {t} did not make it through the node's death: {task}"
        );
        last_finished = Some(task);
    }
    let took = started.elapsed();
    eprintln!(
        "{TASKS} tasks done in {took:?}, the leader killed after {:?}",
        killed_at.map(|k| k - started)
    );
    // Nothing made that nobody asked for.
    let made = stack
        .state_query(&format!(
            "SELECT count(*)::text FROM tasks WHERE id >= {}",
            accepted[0]
        ))
        .await;
    assert_eq!(made, vec![TASKS.to_string()]);
    assert!(last_finished.is_some());
    // The queue lives on under a new leader, on a node still up.
    let alive = nodes
        .iter()
        .enumerate()
        .find(|(i, _)| *i != victim)
        .map(|(_, n)| n)
        .expect("a live node");
    let new_lead = leader(alive, &queue).expect("the queue after the kill");
    assert_ne!(new_lead, lead, "the queue has no new leader");
    // The tasks accepted after the kill ran too, through the other nodes: the services moved.
    let after_kill = &accepted[TASKS / 3..];
    let done = stack
        .state_query(&format!(
            "SELECT count(*)::text FROM tasks WHERE id IN ({}) AND status IN ('success', 'warning')",
            after_kill
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ))
        .await;
    assert_eq!(done, vec![after_kill.len().to_string()]);
    stack.teardown().await;
    drop(nodes);
    let _ = std::fs::remove_dir_all(&root);
}
