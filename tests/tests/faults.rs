//! The broker and the state database go away under load. A private RabbitMQ and a private
//! PostgreSQL (their own ports and data; the shared instances other tests use are never
//! touched) are killed with SIGKILL and restarted, twice each, while 1,000 mixed tasks are
//! accepted and run. A history checker in the spirit of Jepsen's then compares what the API
//! accepted with what happened: no task lost, none run twice, none that nobody asked for.

use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::faults::{Postgres, Rabbit};
use tests::{id, Stack, StackOptions};

const TASKS: usize = 1000;
const SITES: usize = 12;
const SUBMITTERS: usize = 4;

#[derive(Default)]
struct History {
    /// (task id, type, site) of every task the API accepted (202).
    accepted: Vec<(i64, String, i64)>,
    /// When each was accepted (the answer's arrival), for the report.
    accepted_at: Vec<time::OffsetDateTime>,
    /// Requests whose outcome the client cannot know (a timeout, a 5xx other than the 503
    /// that says nothing was changed): the task may or may not exist.
    indeterminate: usize,
    /// 503s for the state database: (how long the answer took, whether it had Retry-After).
    unavailable: Vec<(Duration, bool)>,
}

fn kind(n: usize) -> &'static str {
    match n % 20 {
        0..=13 => "verify",
        14..=16 => "login-reset",
        _ => "backup",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_survive_the_broker_and_the_state_database_dying_twice() {
    let root = std::path::PathBuf::from("/tmp/hosting-tests").join(format!(
        "faults-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&root).expect("the test's directory");
    let mut rabbit = Rabbit::start(&root).await.expect("a private RabbitMQ");
    let mut pg = Postgres::start(&root).await.expect("a private PostgreSQL");
    let stack = Stack::spawn_with(StackOptions {
        amqp_url: Some(rabbit.url()),
        pg_port: Some(pg.port),
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
    for n in 0..SITES {
        sites.push(id(&stack
            .install_site(&format!("load{n}.acme.example"), "acme")
            .await));
    }
    let first_task = stack
        .state_query("SELECT COALESCE(max(id), 0)::text FROM tasks")
        .await
        .first()
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);

    let history = Arc::new(Mutex::new(History::default()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let api = stack.api.clone();
    let token = stack.token.clone();
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|_| {
            let (history, next, sites, api, token) = (
                history.clone(),
                next.clone(),
                sites.clone(),
                api.clone(),
                token.clone(),
            );
            tokio::spawn(async move {
                let auth = format!("Bearer {token}");
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if n >= TASKS {
                        return;
                    }
                    let (site, kind) = (sites[n % sites.len()], kind(n));
                    let body = json!({"type": kind}).to_string();
                    // Asked again until accepted: a 503 changed nothing, so asking again
                    // cannot make a second task; an unknown outcome may have.
                    loop {
                        let asked = Instant::now();
                        let r = tokio::time::timeout(
                            Duration::from_secs(30),
                            tests::http::request(
                                "POST",
                                &format!("{api}/api/v1/sites/{site}/tasks"),
                                Some(&body),
                                &[
                                    ("authorization", &auth),
                                    ("content-type", "application/json"),
                                ],
                            ),
                        )
                        .await;
                        let accepted = {
                            let mut h = history.lock().expect("the history");
                            match r {
                                Ok(Ok(resp)) if resp.status == 202 => {
                                    let v: Value =
                                        serde_json::from_str(&resp.body).unwrap_or_default();
                                    h.accepted.push((id(&v["task"]), kind.to_owned(), site));
                                    h.accepted_at.push(time::OffsetDateTime::now_utc());
                                    true
                                }
                                Ok(Ok(resp)) if resp.status == 503 => {
                                    h.unavailable.push((
                                        asked.elapsed(),
                                        resp.header("retry-after").is_some(),
                                    ));
                                    false
                                }
                                Ok(Ok(resp)) if resp.status == 409 => {
                                    panic!("refused: {}", resp.body);
                                }
                                _ => {
                                    h.indeterminate += 1;
                                    false
                                }
                            }
                        };
                        if accepted {
                            // Paced, so that tasks keep coming in through every fault.
                            tokio::time::sleep(Duration::from_millis(150)).await;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
            })
        })
        .collect();

    // The faults, while the tasks come in and run. Each return is noted: tasks must flow again
    // within 10 s of it.
    let mut returns = Vec::new();
    let mut down_probes = Vec::new();
    for round in 0..2 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        rabbit.kill();
        tokio::time::sleep(Duration::from_secs(3)).await;
        rabbit.restart().await.expect("RabbitMQ back");
        returns.push(("broker", round, time::OffsetDateTime::now_utc()));

        tokio::time::sleep(Duration::from_secs(4)).await;
        pg.kill();
        // While it is down the API says so at once, and /readyz too.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let asked = Instant::now();
        let r = tests::http::request(
            "GET",
            &format!("{}/api/v1/sites", stack.api),
            None,
            &[("authorization", &format!("Bearer {}", stack.token))],
        )
        .await
        .expect("the gateway answers");
        let took = asked.elapsed();
        let ready = tests::http::request("GET", &format!("{}/readyz", stack.api), None, &[])
            .await
            .expect("readyz answers");
        down_probes.push((
            r.status,
            r.header("retry-after").map(str::to_owned),
            took,
            ready.status,
            ready.body.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        pg.restart().await.expect("PostgreSQL back");
        returns.push(("state database", round, time::OffsetDateTime::now_utc()));
    }
    for s in submitters {
        s.await.expect("a submitter");
    }

    // Everything accepted ends.
    let accepted: Vec<i64> = history
        .lock()
        .expect("the history")
        .accepted
        .iter()
        .map(|a| a.0)
        .collect();
    assert_eq!(accepted.len(), TASKS);
    let deadline = Instant::now() + Duration::from_secs(900);
    let open = loop {
        let open = stack
            .state_query(&format!(
                "SELECT id::text FROM tasks WHERE id > {first_task} AND status IN ('queued', 'processing')"
            ))
            .await;
        if open.is_empty() || Instant::now() > deadline {
            break open;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    // The checker. The clients have stopped, so the history is taken out of its lock.
    let h = std::mem::take(&mut *history.lock().expect("the history"));
    let rows = stack
        .state_query(&format!(
            "SELECT concat_ws('|', id, type, status, site_id, attempts, COALESCE(error, '')) FROM tasks WHERE id > {first_task} ORDER BY id"
        ))
        .await;
    let in_db: std::collections::BTreeMap<i64, Vec<String>> = rows
        .iter()
        .map(|r| {
            let f: Vec<String> = r.splitn(6, '|').map(str::to_owned).collect();
            (f[0].parse().unwrap_or(0), f)
        })
        .collect();
    let lost: Vec<i64> = accepted
        .iter()
        .copied()
        .filter(|t| {
            in_db
                .get(t)
                .is_none_or(|f| !["success", "warning", "error"].contains(&f[2].as_str()))
        })
        .collect();
    let failed: Vec<&Vec<String>> = in_db.values().filter(|f| f[2] == "error").collect();
    let unexpected = in_db
        .keys()
        .filter(|t| !accepted.contains(t))
        .count()
        .saturating_sub(h.indeterminate);
    let duplicated: Vec<String> = stack
        .state_query("SELECT task_id::text FROM backups WHERE task_id IS NOT NULL GROUP BY task_id HAVING count(*) > 1")
        .await;
    let backups_made = stack
        .state_query(&format!(
            "SELECT count(*)::text FROM backups WHERE task_id > {first_task}"
        ))
        .await;
    let backup_tasks = h.accepted.iter().filter(|a| a.1 == "backup").count();
    eprintln!(
        "history: {} accepted, {} indeterminate, {} answered 503; lost {}, duplicated {}, unexpected {}, failed {}; returns {returns:?}",
        h.accepted.len(),
        h.indeterminate,
        h.unavailable.len(),
        lost.len(),
        duplicated.len(),
        unexpected,
        failed.len()
    );
    assert!(open.is_empty(), "tasks still open: {open:?}");
    let when: Vec<String> = lost
        .iter()
        .filter_map(|t| h.accepted.iter().position(|a| a.0 == *t))
        .map(|i| h.accepted_at[i].to_string())
        .collect();
    assert!(lost.is_empty(), "lost: {lost:?}, accepted at {when:?}");
    assert!(
        duplicated.is_empty(),
        "backups made twice for tasks {duplicated:?}"
    );
    assert_eq!(
        backups_made.first().map(String::as_str),
        Some(backup_tasks.to_string().as_str()),
        "one backup per backup task"
    );
    assert_eq!(unexpected, 0, "tasks nobody asked for");
    assert!(failed.is_empty(), "tasks failed on a fault: {failed:#?}");

    // While PostgreSQL was down: 503 with Retry-After at once, and /readyz said so.
    for (status, retry, took, ready, body) in &down_probes {
        assert_eq!(*status, 503, "the API while PostgreSQL is down");
        assert!(retry.is_some(), "no Retry-After");
        assert!(*took < Duration::from_secs(1), "the 503 took {took:?}");
        assert_eq!(*ready, 503, "{body}");
        assert!(body.contains("\"database\":\"unreachable\""), "{body}");
    }
    for (took, retry) in &h.unavailable {
        assert!(*retry, "a 503 without Retry-After");
        assert!(*took < Duration::from_secs(5), "a 503 after {took:?}");
    }

    // Tasks flowed again within 10 s of each return.
    for (what, round, back) in &returns {
        let back = back
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let waiting = stack
            .state_query(&format!(
                "SELECT count(*)::text FROM tasks WHERE id > {first_task} AND created_at < '{back}' AND (finished_at IS NULL OR finished_at > '{back}')"
            ))
            .await;
        if waiting.first().map(String::as_str) == Some("0") {
            continue;
        }
        let flowed = stack
            .state_query(&format!(
                "SELECT count(*)::text FROM tasks WHERE id > {first_task} AND finished_at BETWEEN '{back}' AND timestamptz '{back}' + interval '10 seconds'"
            ))
            .await;
        assert_ne!(
            flowed.first().map(String::as_str),
            Some("0"),
            "no task finished within 10 s after the {what} came back (round {round})"
        );
    }
    drop(h);
    let left = stack.leftovers().await;
    assert!(left.is_empty(), "{left:#?}");
    stack.teardown().await;
    drop(rabbit);
    drop(pg);
    let _ = std::fs::remove_dir_all(&root);
}
